"""flowctl: the command-line interface. Commands are thin; the work is in runtime/, packer/, hub_store/."""

__version__ = "0.1.0"
