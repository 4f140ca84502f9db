"""Bundled data files (a package so that setuptools ships them as package data)."""
