#!/usr/bin/env node
// The `octflow` command and `npm run workflow`: runs the CLI from its compiled bundle and
// rebuilds the bundle first when a source file changed (src/launcher/launch.mjs).
import { launch } from "../src/launcher/launch.mjs"

await launch()
