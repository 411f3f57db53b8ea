from tipline.cli.app import main

main()
