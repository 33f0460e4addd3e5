"""Containers: decoding into `Frame`s, encoding and muxing with stream passthrough."""
