"""Load the models and data sets a spec names."""
