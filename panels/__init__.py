"""Panel definitions shipped with cytomsc (TOML data files; installed as ``cytomsc.panels``)."""
