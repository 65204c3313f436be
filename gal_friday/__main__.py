from gal_friday.cli import main

raise SystemExit(main())
