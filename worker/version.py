"""The release of this checkout. One place for it: pyproject.toml's [project] version is the
same string, and tests/deploy/test_release.py keeps the two equal (and the image label, the
manifests' image tag and the CHANGELOG's newest entry with them). ticketrelay is run from its
checkout, never installed, so there is no package metadata to read it from at run time."""

VERSION = "0.2.0"
