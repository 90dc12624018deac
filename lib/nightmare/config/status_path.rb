# frozen_string_literal: true

module Nightmare
  # What the +status_path+ directive says: the path at which the front
  # answers with its own figures, and who may see them. Checked by the
  # front's own reader when the config is loaded.
  class StatusPath
    # Only this machine, by default: the figures say how busy the site is.
    DEFAULT_ALLOW = ["127.0.0.1", "::1"].freeze

    attr_reader :path, :allow

    def initialize(path, allow: DEFAULT_ALLOW)
      String === path or raise ArgumentError, "status_path needs a path: status_path=#{path.inspect}"
      allow = Array(allow)
      unless allow.all?(String)
        raise ArgumentError, "status_path allow=#{allow.inspect}: give addresses or networks as Strings, " \
                             'like ["127.0.0.1", "10.0.0.0/8"]'
      end
      Nightmare::Native.check_status_page(path, allow)
      @path = path.dup.freeze
      @allow = allow.map { |address| address.dup.freeze }.freeze
      freeze
    end

    def to_native = [path, allow]

    def ==(other)
      other.is_a?(StatusPath) && other.to_native == to_native
    end
  end
end
