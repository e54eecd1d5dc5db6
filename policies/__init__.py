"""Two rooms under one roof: placement (`policies/placement`, right after infra/ in the data flow) and the
checks (`policies/rules`, `facts`, `crossguard`, `pack`: last in the data flow, they read what the program
renders). Placement imports only infra/; the checks may import every room upstream of them."""
