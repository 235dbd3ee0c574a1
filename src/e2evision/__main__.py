from e2evision.cli import main

main()
