from aifactory.cli import main

main()
