from __future__ import annotations

from collector.cli import main

raise SystemExit(main())
