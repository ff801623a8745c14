"""gme-recwatch: verified intake and lifecycle monitoring for Tencent Cloud GME recording callbacks."""

__version__ = "0.1.0"
