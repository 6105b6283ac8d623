"""The versioned schema, installed as the ``collector.migrations`` package (see setup.py).

Each ``NNN_name.sql`` file is one migration, applied in order by ``collector migrate``;
this file only makes the directory a package so ``importlib.resources`` finds it in
editable installs, wheels and the container alike."""
