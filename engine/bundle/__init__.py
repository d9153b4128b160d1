"""Model bundles: read, verify (sha256 per file), describe."""

from engine.bundle.format import Bundle, read_bundle, write_manifest

__all__ = ["Bundle", "read_bundle", "write_manifest"]
