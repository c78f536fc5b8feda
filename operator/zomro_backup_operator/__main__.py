from zomro_backup_operator.cli import main

raise SystemExit(main())
