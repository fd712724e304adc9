//go:build tools

// Package tools pins Kueue's manager command for the e2e suite.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
