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
      nightmare_on = set[:nightmare].is_a?(Nightmare::Options)
      if nightmare_on && set[:worker_exec] == true
        raise ArgumentError, "nightmare cannot run with worker_exec true: an exec'd worker " \
                             "cannot inherit the master's private listener; drop one of the two"
      end
      nightmare_check_tls(nightmare_on)
      super
    end

    # HUP reads the file anew: an ssl block removed since must not leave
    # its settings on the listener (Unicorn keeps listener options).
    def reload(merge_defaults = true) # :nodoc:
      set[:listener_opts].each_value { |opts| opts.delete(:ssl_opts) } if Hash === set[:listener_opts]
      super
    end

    private

    # Every ssl block's files are read and parsed now, so a bad one stops
    # the start (or, on HUP, keeps the running config) with its name.
    def nightmare_check_tls(nightmare_on)
      blocks = set[:listeners].filter_map { |address| set[:listener_opts].fetch(address, {})[:ssl_opts] }.uniq
      return if blocks.empty?

      unless nightmare_on
        raise ArgumentError, "ssl needs the front: Unicorn alone has no TLS; add `nightmare true` " \
                             "to the config (or remove the ssl block)"
      end
      blocks.each(&:check!)
    end
  end
end

Unicorn::Configurator.prepend(Nightmare::Configurator)
# HUP merges the defaults back before re-reading the file, so a removed
# `nightmare` line turns the front off again.
Unicorn::Configurator::DEFAULTS[:nightmare] = false
