# frozen_string_literal: true

module Nightmare
  # The +nightmare+ directive for Unicorn's config file.
  module Configurator
    # Puts the Nightmare! front between clients and the workers, so that a
    # slow client (slowloris, slow upload, slow reader) costs a socket in the
    # front instead of a worker. Off by default: without it Unicorn runs
    # exactly as it would without the gem.
    #
    #   nightmare true
    #   nightmare client_max_body_size: "100m", temp_path: "/dev/shm"
    #   nightmare do
    #     client_max_body_size "100m"
    #     client_body_timeout "30s"
    #   end
    #
    # See Nightmare::Options for every setting and its default.
    def nightmare(setting = true, &block)
      set[:nightmare] = Nightmare::Options.from_directive(setting, &block)
    end

    def commit!(server, options = {}) # :nodoc:
      if set[:nightmare] && set[:worker_exec] == true
        raise ArgumentError, "nightmare cannot run with worker_exec true: an exec'd worker " \
                             "cannot inherit the master's private listener; drop one of the two"
      end
      super
    end
  end
end

Unicorn::Configurator.prepend(Nightmare::Configurator)
# HUP merges the defaults back before re-reading the file, so a removed
# `nightmare` line turns the front off again.
Unicorn::Configurator::DEFAULTS[:nightmare] = false
