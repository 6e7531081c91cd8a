"""The balancer drivers, one module each (the contract is lab.balancers): every module here is imported
when a driver is first looked up, and each registers its class with `@register`."""
