import BrokerCore

// Replaced by the broker executable as it lands.
print("floe-broker: not yet runnable")
