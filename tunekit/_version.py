"""tunekit's version (one place: the package, setup.cfg and exported model manifests read it)."""

__version__ = "0.1.0"
