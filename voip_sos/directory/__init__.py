"""The directory ("storage server"): STB fixed IP -> subscriber, address, contacts (F1, F3).

SQLAlchemy stays inside this package; everything it hands out is a plain record.
"""

from voip_sos.directory.records import ADDRESS_PARTS, Address, Contact, Stb, StbMatch, Subscriber
from voip_sos.directory.repository import Directory

__all__ = ["ADDRESS_PARTS", "Address", "Contact", "Directory", "Stb", "StbMatch", "Subscriber"]
