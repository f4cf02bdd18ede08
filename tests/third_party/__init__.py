"""Official model code vendored from the source projects (repository, path and commit at the top of each
file), kept as published: the references ``tests/test_official_features.py`` holds the backbones to."""
