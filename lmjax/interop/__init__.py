"""Reading and writing other tools' model formats (ARPA back-off language models)."""
