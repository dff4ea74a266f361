package kube

import (
	"errors"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config returns the REST configuration of the API server: from the
// kubeconfig file at path when path is not empty; else the in-cluster
// configuration of a Pod's service account; else the standard kubeconfig
// loading rules ($KUBECONFIG, else ~/.kube/config).
func Config(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kube: kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err == nil {
		return cfg, nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("kube: in-cluster configuration: %w", err)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kube: not in a cluster and no usable kubeconfig ($KUBECONFIG or ~/.kube/config; or give a path): %w", err)
	}
	return cfg, nil
}

// Client reads PVCs, PVs and VolumeAttachments from one API server. It is safe
// for concurrent use.
type Client struct {
	cs  kubernetes.Interface
	cfg *rest.Config // nil for NewForClientset; the objects' clients need it (objects.go)
	dyn dynClients   // built from cfg on first use (objects.go)
}

// New returns a Client for cfg.
func New(cfg *rest.Config) (*Client, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: client for %s: %w", cfg.Host, err)
	}
	return &Client{cs: cs, cfg: cfg}, nil
}

// NewFromConfigPath is Config followed by New.
func NewFromConfigPath(path string) (*Client, error) {
	cfg, err := Config(path)
	if err != nil {
		return nil, err
	}
	return New(cfg)
}

// NewForClientset returns a Client over an existing clientset (a fake one in
// tests).
func NewForClientset(cs kubernetes.Interface) *Client { return &Client{cs: cs} }
