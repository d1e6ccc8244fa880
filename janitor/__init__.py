"""janitor: finds idle or stuck sessions on data platforms and cleans them up, with an audit trail."""

__version__ = "0.1.0"
