"""Lightning callbacks methods share (gradient projection, ...)."""
