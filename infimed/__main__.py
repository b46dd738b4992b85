from infimed.cli import main

raise SystemExit(main())
