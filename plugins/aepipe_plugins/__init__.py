"""aepipe's first-party plugins, each registered through the ``aepipe`` entry-point group."""
