package main

import "github.com/spf13/cobra"

// addRetentionCommands adds enforce and cleanup once blockdiff has them.
func (a *app) addRetentionCommands(root *cobra.Command) {}
