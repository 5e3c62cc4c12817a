module fleetprov.example/fleetprov

go 1.19
