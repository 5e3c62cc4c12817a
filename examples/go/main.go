// Command provision runs AWS IoT fleet provisioning from Go with the fleetprov package: connect
// with a claim certificate, get a certificate (CreateKeysAndCertificate, or
// CreateCertificateFromCsr with --csr), register the thing with a provisioning template
// (RegisterThing), print the result, disconnect.
//
// Exit codes: 0 success, 1 failure, 2 usage. The private key is never printed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"

	"fleetprov.example/fleetprov"
)

// usageError marks bad command-line input (exit code 2).
type usageError struct{ error }

func provision(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("provision", flag.ContinueOnError)
	var opts fleetprov.Options
	var port uint
	fs.StringVar(&opts.Endpoint, "endpoint", "", "provisioning endpoint host name (required)")
	fs.UintVar(&port, "port", 8883, "MQTT port")
	fs.StringVar(&opts.CAFile, "ca_file", "", "PEM file of the CAs trusted for the server (default: system roots)")
	fs.StringVar(&opts.CertFile, "cert", "", "claim certificate PEM file (required)")
	fs.StringVar(&opts.KeyFile, "key", "", "claim certificate's private key PEM file (required)")
	template := fs.String("template_name", "", "provisioning template name (required)")
	paramsJSON := fs.String("template_parameters", "", `template parameters, e.g. {"SerialNumber":"1"}`)
	csrFile := fs.String("csr", "", "CSR PEM file: use CreateCertificateFromCsr")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if opts.Endpoint == "" || opts.CertFile == "" || opts.KeyFile == "" || *template == "" || port > 65535 {
		return usageError{errors.New("--endpoint, --cert, --key and --template_name are required; --port is 1-65535")}
	}
	opts.Port = uint16(port)
	var params map[string]string
	if *paramsJSON != "" {
		if err := json.Unmarshal([]byte(*paramsJSON), &params); err != nil {
			return usageError{fmt.Errorf("--template_parameters: %w", err)}
		}
	}
	// Refuse bad input before creating a certificate that could not be registered.
	if err := fleetprov.CheckRegistration(*template, params); err != nil {
		return usageError{err}
	}

	client, err := fleetprov.New(opts)
	if err != nil {
		return usageError{err}
	}
	defer client.Close()
	if err := client.Connect(ctx); err != nil {
		return err
	}
	fmt.Printf("Connected to %s.\n", opts.Endpoint)

	var cert *fleetprov.Certificate
	if *csrFile != "" {
		csr, err := os.ReadFile(*csrFile)
		if err != nil {
			return err
		}
		if cert, err = client.CreateFromCSR(ctx, csr); err != nil {
			return err
		}
	} else {
		keys, err := client.CreateKeys(ctx)
		if err != nil {
			return err
		}
		// A real device stores keys.CertificatePEM and keys.PrivateKey (securely) here.
		keys.WipeKey()
		fmt.Println("Private key received (not shown, not kept by this example).")
		cert = &keys.Certificate
	}
	fmt.Printf("Certificate created: %s\n", cert.CertificateID)

	thing, err := client.RegisterThing(ctx, *template, cert.CertificateOwnershipToken, params)
	if err != nil {
		return err
	}
	fmt.Printf("Thing registered: %s\n", thing.ThingName)
	fmt.Println("Device configuration:")
	keys := make([]string, 0, len(thing.DeviceConfiguration))
	for k := range thing.DeviceConfiguration {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  %s = %s\n", k, thing.DeviceConfiguration[k])
	}
	client.Close()
	fmt.Println("Disconnected.")
	return nil
}

func main() {
	// Ctrl-C cancels what is pending.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := provision(ctx, os.Args[1:])
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "provision: %v\n", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
