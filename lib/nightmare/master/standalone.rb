# frozen_string_literal: true

require "optparse"
require "unicorn/launcher"

module Nightmare
  # The front alone, in front of Unicorns on other hosts (the `nightmare`
  # executable). It is a Unicorn master with no workers: Unicorn's config
  # file and directives (listen, the ssl block, pid, stderr_path, user,
  # working_directory, ...), its signals (QUIT, TERM, INT, HUP, USR1, USR2
  # with the listeners inherited, then QUIT the old master), its logs,
  # daemonizing and systemd socket activation all work as they do for
  # Unicorn, and the master looks after the front as it always does.
  module Standalone
    # What a worker would run; no worker ever does.
    NO_APP = ->(_env) { [500, { "content-type" => "text/plain" }, ["nightmare: this process runs no application\n"]] }

    # A Unicorn master that runs no workers.
    class Server < Unicorn::HttpServer
      # TTIN, TTOU and the config's worker_processes have nothing to count.
      def worker_processes=(_count)
        super(0)
      end

      private

      def nightmare_local_workers? = false
    end

    module_function

    # The command line, as `unicorn`'s where the two share options.
    def run(argv)
      options = { listeners: [], nightmare_standalone: true }
      daemonize = false
      parser = OptionParser.new do |opts|
        opts.banner = "Usage: nightmare [options]\n\nRuns the Nightmare! front alone, in front of the Unicorns " \
                      "its config names.\n\n"
        opts.on("-c", "--config-file FILE", "the config file (Unicorn's directives, and upstream, backup, map)") do |f|
          options[:config_file] = f
        end
        opts.on("-l", "--listen {HOST:PORT|PATH}", "listen on HOST:PORT or PATH (may be given several times)") do |a|
          options[:listeners] << a
        end
        opts.on("-D", "--daemonize", "run daemonized in the background") { daemonize = true }
        opts.on_tail("-h", "--help", "show this message") do
          puts opts
          exit
        end
        opts.on_tail("-v", "--version", "show the version") do
          puts "nightmare v#{Nightmare::VERSION}"
          exit
        end
      end
      parser.parse!(argv)
      options[:config_file] or abort "nightmare: give a config file with -c (see nightmare --help)"
      Unicorn::Launcher.daemonize!(options) if daemonize
      Server.new(NO_APP, options).start.join
    end
  end
end
