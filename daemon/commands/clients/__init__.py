"""`luna config CLIENT`: entries for the MCP clients people use, printed or merged in place.

registry.py: each client's file, per OS, and entry shape (with the documentation it follows);
jsonedit.py / tomledit.py: surgical edits that keep every other byte of the user's file;
apply.py: the install / remove policy (pure) and the write with a backup; command.py: the CLI.
"""
