from empathy_dag.cli import main

raise SystemExit(main())
