from joulebench.cli.app import main

main()
