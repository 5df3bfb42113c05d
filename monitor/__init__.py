"""persistence-monitor: is each deployed pre-trained model still persistent?"""

__version__ = "0.1.0"
