"""frozenbench: how good is a pretrained backbone when it stays frozen?"""

__version__ = "0.1.0"
