"""The one place the version is written: setuptools reads it for the
package metadata (pyproject.toml, dynamic version), zkalloc_np re-exports it
as __version__.  Plain assignment, no imports: setuptools parses it without
importing the package (which would need the compiled extension)."""
__version__ = "0.1.0"
