NODES: list = []
