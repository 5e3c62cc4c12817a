module fleetprov.example/provision

go 1.19
