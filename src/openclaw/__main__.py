from openclaw.cli.main import main

main()
