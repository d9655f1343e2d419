"""Attention-based attribution for vision transformers: attention rollout and gradient-weighted
attention relevance, from the attention probabilities that torchvision's, timm's and Hugging
Face's ViTs compute (:mod:`.capture`)."""
