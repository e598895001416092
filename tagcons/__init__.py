"""tagcons: score how well a hashtag fits an image (1-5) with CLIP-family models."""

__version__ = "0.1.0"
