module fleetprov.example/provision

go 1.19

require fleetprov.example/fleetprov v0.0.0

replace fleetprov.example/fleetprov => ../../bindings/go
