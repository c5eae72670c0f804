from gpumesh.cli.main import main

main()
