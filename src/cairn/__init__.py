"""Cairn: backups for Proxmox VE in Proxmox Backup Server's on-disk format."""

__version__ = "0.1.0"
