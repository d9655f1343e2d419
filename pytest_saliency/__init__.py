"""pytest-saliency: declare what an image model's saliency must look like, test it with pytest."""

__version__ = "0.1.0"
