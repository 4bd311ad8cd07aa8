"""``python -m secateurs`` runs the command line (also what ``torchrun -m secateurs`` launches)."""

from secateurs.cli.main import entry_point

if __name__ == "__main__":
    entry_point()
