"""What touches models: loading, the one layer loop (capture), surgery, and saving."""
