"""Property-based fuzzing of every parser that reads untrusted bytes."""
