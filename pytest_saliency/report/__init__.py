"""Everything a run shows and writes: the terminal's failure text and summary table
(``terminal``), the number formats they share (``format``), the JSON results document
(``results``), the HTML report (``html``, with ``thumbnails``), the outputs of a run
(``outputs``), the progress bar (``progress``) and the report's screenshot (``screenshot``)."""
