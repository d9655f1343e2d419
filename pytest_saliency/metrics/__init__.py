"""Pure tensor implementations of the saliency methods (no pytest inside)."""
