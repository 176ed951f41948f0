"""Files: the one image / archive / .npz reader, the one downloader, the one atomic write, the
folders data and caches live in, and image grids as PNG files."""
