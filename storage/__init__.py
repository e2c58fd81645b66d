"""Storage: the one owner of the studio's DuckDB file (no SQL lives outside core/ and this package).

``db``           ``Database``: one connection with per-thread cursors, one writer, migrations, backup helpers
``migrations/``  numbered SQL files applied in order at open (``NNN_name.sql``); the schema version is the last one
"""
