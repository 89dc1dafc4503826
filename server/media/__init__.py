"""Media: image uploads with jan_* ids, storage (local directory or S3), presigned URLs (jan.media.v1)."""
